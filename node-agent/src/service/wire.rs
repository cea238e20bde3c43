//! Between the wire and the tenant actor: a request's function and input
//! checked, and an invocation's end turned into a reply or into a `Status`
//! that carries its [`Reason`] and keeps the gRPC code and message callers
//! and users already know.

use std::time::Duration;

use ephemera_domain::code::CodeError;
use ephemera_domain::Reason;
use ephemera_proto::v1::{FunctionSpec, RunReply};
use tonic::{Code, Status};

use crate::runtime::RunError;
use crate::tenant::{RunOutcome, TenantError, DEFAULT_TIMEOUT};

/// The `Status` for a tenant table left poisoned by a panic: the agent
/// cannot route invocations any more.
pub(super) fn poisoned() -> Status {
    Reason::Unavailable.status_with_code(Code::Internal, "tenant table poisoned")
}

/// `Run` or `Profile` named code this agent does not hold: the caller sends
/// it along. The controller still recognises the message's prefix too, until
/// it reads the reason.
pub(super) fn code_missing(f: &FunctionSpec) -> Status {
    Reason::CodeMissing.status(format!("code missing: {}", f.code_digest))
}

/// The code sent along could not be materialised.
pub(super) fn code_status(f: &FunctionSpec, e: CodeError) -> Status {
    match e {
        CodeError::DigestMismatch { .. } | CodeError::UnsafePath { .. } => {
            Reason::InvalidArgument.status(format!("function {}/{}: {e}", f.tenant, f.name))
        }
        // The agent's own disk failed it: another node may not.
        other => Reason::Unavailable.status_with_code(
            Code::Internal,
            format!(
                "function {}/{}: materialising its code: {other}",
                f.tenant, f.name
            ),
        ),
    }
}

/// The request's function, if it names a tenant, a name and a command.
pub(super) fn check_function(f: Option<FunctionSpec>) -> Result<FunctionSpec, Status> {
    let f = f.ok_or_else(|| Reason::InvalidArgument.status("request carries no function"))?;
    if f.tenant.is_empty() || f.name.is_empty() {
        return Err(Reason::InvalidArgument.status(format!(
            "function needs a tenant and a name (got {:?}/{:?})",
            f.tenant, f.name
        )));
    }
    if f.cmd.trim().is_empty() {
        return Err(Reason::InvalidArgument.status(format!(
            "function {}/{} has no launcher command",
            f.tenant, f.name
        )));
    }
    Ok(f)
}

/// The invocation's JSON input (empty: `{}`).
pub(super) fn parse_input(f: &FunctionSpec, input: &str) -> Result<serde_json::Value, Status> {
    ephemera_domain::input::parse(input).map_err(|e| {
        Reason::InvalidArgument.status(format!("input for function {}/{}: {e}", f.tenant, f.name))
    })
}

/// How long one invocation of `f` may run.
pub(super) fn timeout_of(f: &FunctionSpec) -> Duration {
    if f.timeout_ms == 0 {
        DEFAULT_TIMEOUT
    } else {
        Duration::from_millis(f.timeout_ms)
    }
}

/// The `Status` for a failed invocation.
pub(super) fn run_status(f: &FunctionSpec, invocation: &str, node: &str, e: TenantError) -> Status {
    let name = format!("{}/{}", f.tenant, f.name);
    let tail = |t: &str| {
        if t.is_empty() {
            String::new()
        } else {
            let keep = 600;
            let start = t.len().saturating_sub(keep);
            let start = (start..t.len())
                .find(|i| t.is_char_boundary(*i))
                .unwrap_or(t.len());
            format!("; its stderr ends with:\n{}", &t[start..])
        }
    };
    match e {
        TenantError::Run {
            instance, error, ..
        } => match error {
            RunError::NonJson { output } => Reason::FunctionFailed.status(format!(
                "function {name} returned a non-JSON result: {output} (instance {instance})"
            )),
            RunError::Exited {
                status,
                stderr_tail,
                ..
            } => Reason::FunctionFailed.status(format!(
                "function {name}: launcher exited with {status} during invocation {invocation}; instance {instance} replaced{}",
                tail(&stderr_tail)
            )),
            RunError::Timeout {
                timeout_ms,
                stderr_tail,
            } => Reason::Timeout.status(format!(
                "function {name} timed out after {timeout_ms} ms during invocation {invocation}; instance {instance} killed and replaced{}",
                tail(&stderr_tail)
            )),
            RunError::Proxy(msg) => Reason::FunctionFailed.status(format!(
                "function {name}: lost instance {instance} during invocation {invocation} ({msg}); instance replaced"
            )),
            RunError::Stopped => Reason::ShuttingDown.status(format!(
                "node agent {node} is shutting down; invocation {invocation} of {name} was stopped"
            )),
        },
        TenantError::Start { instance, reason } => Reason::Unavailable.status(format!(
            "function {name}: instance {instance} could not start: {reason}"
        )),
        TenantError::ShuttingDown => Reason::ShuttingDown.status(format!(
            "node agent {node} is shutting down; invocation {invocation} of {name} was not run"
        )),
    }
}

/// The reply for a run that returned; a function that returned an `error`
/// field raised, and fails the call.
pub(super) fn reply_of(f: &FunctionSpec, out: RunOutcome) -> Result<RunReply, Status> {
    if let Some(err) = out.result.as_object().and_then(|o| o.get("error")) {
        let msg = match err {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Err(Reason::FunctionFailed.status(format!(
            "function {}/{} raised an error: {msg}",
            f.tenant, f.name
        )));
    }
    Ok(RunReply {
        result_json: out.result.to_string(),
        duration_us: out.duration.as_micros() as u64,
        tier: Some(ephemera_domain::tier::to_wire(&out.counters)),
        instance_id: out.instance_id,
        launcher_pid: out.launcher_pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> FunctionSpec {
        FunctionSpec {
            tenant: "acme".into(),
            name: "f".into(),
            cmd: "run".into(),
            ..Default::default()
        }
    }

    fn run_failed(error: RunError) -> TenantError {
        TenantError::Run {
            instance: "i-1".into(),
            launcher_pid: 7,
            error,
        }
    }

    #[test]
    fn every_failure_keeps_its_code_and_carries_its_reason() {
        let exited = RunError::Exited {
            status: "status 3".into(),
            stderr_tail: "Traceback".into(),
            idle: false,
        };
        let timeout = RunError::Timeout {
            timeout_ms: 5,
            stderr_tail: String::new(),
        };
        let nonjson = RunError::NonJson {
            output: "hi".into(),
        };
        let start = TenantError::Start {
            instance: "i-1".into(),
            reason: "no proxy".into(),
        };
        for (e, code, reason, starts) in [
            (run_failed(exited), Code::Aborted, Reason::FunctionFailed, "function acme/f: launcher exited with status 3 during invocation inv-1; instance i-1 replaced; its stderr ends with:\nTraceback"),
            (run_failed(timeout), Code::DeadlineExceeded, Reason::Timeout, "function acme/f timed out after 5 ms"),
            (run_failed(nonjson), Code::Aborted, Reason::FunctionFailed, "function acme/f returned a non-JSON result: hi"),
            (run_failed(RunError::Proxy("eof".into())), Code::Aborted, Reason::FunctionFailed, "function acme/f: lost instance i-1"),
            (run_failed(RunError::Stopped), Code::Unavailable, Reason::ShuttingDown, "node agent n is shutting down"),
            (start, Code::Unavailable, Reason::Unavailable, "function acme/f: instance i-1 could not start: no proxy"),
            (TenantError::ShuttingDown, Code::Unavailable, Reason::ShuttingDown, "node agent n is shutting down"),
        ] {
            let s = run_status(&f(), "inv-1", "n", e);
            assert_eq!((s.code(), Reason::of(&s)), (code, Some(reason)), "{s:?}");
            assert!(s.message().starts_with(starts), "{s:?}");
        }
    }

    #[test]
    fn bad_requests_and_raised_errors_are_typed() {
        let no_cmd = FunctionSpec {
            cmd: " ".into(),
            ..f()
        };
        for s in [
            check_function(None).unwrap_err(),
            check_function(Some(no_cmd)).unwrap_err(),
            parse_input(&f(), "{not json").unwrap_err(),
        ] {
            assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
            assert_eq!(Reason::of(&s), Some(Reason::InvalidArgument));
        }
        let raised = RunOutcome {
            result: serde_json::json!({ "error": "ValueError: x" }),
            duration: Duration::ZERO,
            counters: Default::default(),
            instance_id: "i-1".into(),
            launcher_pid: 7,
        };
        let s = reply_of(&f(), raised).unwrap_err();
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(Reason::of(&s), Some(Reason::FunctionFailed));
        assert_eq!(
            s.message(),
            "function acme/f raised an error: ValueError: x"
        );
        assert_eq!(poisoned().code(), Code::Internal);
        let missing = code_missing(&f());
        assert_eq!(missing.code(), Code::FailedPrecondition);
        assert_eq!(Reason::of(&missing), Some(Reason::CodeMissing));
        assert!(missing.message().starts_with("code missing: "));
    }
}
