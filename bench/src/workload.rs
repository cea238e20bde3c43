//! The workload and where it runs: `workloads/mix.py` (the thesis's two
//! tasks) as the agent receives it, the two functions' specs and inputs, and
//! the bench's own work directory.

use std::fs;
use std::path::{Path, PathBuf};

use ephemera_proto::v1::{CodeFile, FunctionSpec, Profile};

use crate::error::{io_err, BenchError};
use crate::options::MixOptions;

/// Bytes in a MiB: the options give every size in MiB.
pub(crate) const MIB: u64 = 1 << 20;

/// The functions `io_task` and `cpu_task`, as one Python module run by
/// `ephemera-python`; a file so that it reads (and lints) as Python.
pub const WORKLOAD_PY: &str = include_str!("../workloads/mix.py");

/// Removes the bench's own work directory when dropped.
pub(crate) struct WorkDir {
    /// The directory.
    pub(crate) path: PathBuf,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A function of the mix: `cpu_task` (`cpu`) or `io_task`, with the trace's
/// limit and measured profile; `workflow` puts it in the workflow `mix`.
pub(crate) fn spec(
    o: &MixOptions,
    name: &str,
    cpu: bool,
    workflow: bool,
    digest: &str,
) -> FunctionSpec {
    let (limit, u, fmax) = if cpu {
        (o.cpu_limit_mib, o.cpu_u_max_mib, 0)
    } else {
        (o.io_limit_mib, o.io_u_max_mib, o.io_f_max_mib)
    };
    FunctionSpec {
        tenant: "bench".into(),
        name: name.into(),
        cmd: format!("ephemera-python fns.py:{name}"),
        memory_bytes: limit * MIB,
        timeout_ms: 3_600_000,
        code_digest: digest.into(),
        profile: Some(Profile {
            u_max_bytes: u * MIB,
            f_max_bytes: fmax * MIB,
            measured: true,
        }),
        workflow: if workflow {
            "mix".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// The I/O task's input: the trace's file size and random operations.
pub(crate) fn io_input(o: &MixOptions) -> serde_json::Value {
    serde_json::json!({ "size_mib": o.io_file_mib, "ops": o.io_ops })
}

/// The CPU task's input: `rounds` factorials of the trace's size.
pub(crate) fn cpu_input(o: &MixOptions, rounds: u64) -> serde_json::Value {
    serde_json::json!({ "n": o.cpu_n, "rounds": rounds })
}

/// The functions' code as the agent receives it.
fn workload_code(dir: &Path) -> Result<(Vec<CodeFile>, String), BenchError> {
    let src = dir.join("src");
    fs::create_dir_all(&src).map_err(io_err(format!("creating {}", src.display())))?;
    fs::write(src.join("fns.py"), WORKLOAD_PY).map_err(io_err("writing fns.py"))?;
    let code = ephemera_domain::code::read_dir(&src)
        .map_err(|e| BenchError::Setup(format!("reading the workload code: {e}")))?;
    let digest = ephemera_domain::code::digest(&code);
    Ok((code, digest))
}

/// Makes the binaries' paths absolute (the launcher runs in the code dir, and
/// `LD_PRELOAD` of a relative path would silently load nothing) and creates
/// the work directory with the workload's code in it.
pub(crate) fn prepare(
    mut opts: MixOptions,
) -> Result<(MixOptions, WorkDir, Vec<CodeFile>, String), BenchError> {
    for (what, p) in [
        ("proxy", &mut opts.proxy_bin),
        ("intercept library", &mut opts.intercept_lib),
    ] {
        *p = fs::canonicalize(&*p)
            .map_err(|e| BenchError::Setup(format!("{what} {}: {e}", p.display())))?;
    }
    let base = match &opts.work_dir {
        Some(d) => d.join(format!("bench-{}", std::process::id())),
        None => std::env::temp_dir().join(format!("ephemera-bench-{}", std::process::id())),
    };
    let work = WorkDir {
        path: std::path::absolute(&base)
            .map_err(io_err(format!("resolving {}", base.display())))?,
    };
    fs::create_dir_all(&work.path).map_err(io_err(format!("creating {}", base.display())))?;
    let (code, digest) = workload_code(&work.path)?;
    Ok((opts, work, code, digest))
}
