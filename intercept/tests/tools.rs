//! Real programs, run once inside the tier (under the preload) and once in
//! a plain directory: same stdout, same final trees byte for byte (read
//! without the preload, sizes exact), and counters showing the tier served
//! the I/O.

mod common;

use common::{counter, have, ok, read_stats, tiered, tree};
use std::path::Path;
use std::process::Command;

/// Runs `script` with bash in a tier dir and in a plain dir; compares
/// everything; returns the summed counters of every process inside.
fn same_inside_and_outside(script: &str) -> (u64, u64, u64) {
    let tier = common::tempdir().unwrap();
    let plain = common::tempdir().unwrap();
    let stats_dir = common::tempdir().unwrap();
    let inside = ok(tiered("bash", tier.path())
        .current_dir(tier.path())
        .env("EPHEMERA_STATS", stats_dir.path().join("%p.json"))
        .args(["-euo", "pipefail", "-c", script]));
    let outside = ok(Command::new("bash")
        .current_dir(plain.path())
        .args(["-euo", "pipefail", "-c", script]));
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout),
        String::from_utf8_lossy(&outside.stdout),
        "stdout differs"
    );
    let (a, b) = (tree(tier.path()), tree(plain.path()));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "file sets differ"
    );
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "{} differs ({} vs {} bytes)",
            k.display(),
            v.len(),
            b[k].len()
        );
    }
    sum_stats(stats_dir.path())
}

fn sum_stats(dir: &Path) -> (u64, u64, u64) {
    let (mut reads, mut writes, mut bytes) = (0, 0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let s = read_stats(&e.unwrap().path());
        reads += counter(&s, "reads");
        writes += counter(&s, "writes");
        bytes += counter(&s, "bytes_read") + counter(&s, "bytes_written");
    }
    (reads, writes, bytes)
}

fn assert_served((reads, writes, bytes): (u64, u64, u64), min_bytes: u64) {
    assert!(reads > 0 && writes > 0, "reads {reads} writes {writes}");
    assert!(
        bytes >= min_bytes,
        "only {bytes} bytes served, expected {min_bytes}"
    );
}

#[test]
fn gzip_tar_sort_dd_cp() {
    let script = r#"
        awk 'BEGIN { srand(1); for (i = 0; i < 200000; i++) print int(rand() * 1e9), i }' > big.txt
        gzip -n -c big.txt > big.txt.gz
        gunzip -c big.txt.gz > big.back
        cmp big.txt big.back
        mkdir -p src/sub sorttmp
        for i in $(seq 1 30); do head -c $((i * 3001)) big.txt > src/f$i; done
        cp big.txt src/sub/copy
        dd if=big.txt of=src/sub/dd bs=8k status=none
        dd if=big.txt of=src/sub/dd-rand bs=4k count=50 seek=3 conv=notrunc status=none
        tar --mtime=@0 --owner=0 --group=0 --numeric-owner --sort=name -cf src.tar src
        mkdir out && tar -xf src.tar -C out
        diff -r src out/src
        sort -T sorttmp -S 64k -n big.txt > sorted.txt
        sort -n -c sorted.txt
        wc -l sorted.txt
        md5sum big.txt sorted.txt src.tar | cut -c1-32
    "#;
    let served = same_inside_and_outside(script);
    assert_served(served, 20 << 20);
}

#[test]
fn sqlite_integrity_check() {
    if !have("sqlite3") {
        eprintln!("sqlite3 not installed: skipped");
        return;
    }
    let script = r#"
        sqlite3 db.sqlite "
            PRAGMA journal_mode=DELETE;
            CREATE TABLE t(a INTEGER, b TEXT);
            WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)
              INSERT INTO t SELECT x, hex(x * 2654435761 % 1000003) FROM c;
            CREATE INDEX tb ON t(b);
            UPDATE t SET b = b || 'x' WHERE a % 7 = 0;
            DELETE FROM t WHERE a % 11 = 0;
            PRAGMA integrity_check;
            SELECT count(*), sum(a), max(b) FROM t;"
        sqlite3 db.sqlite "PRAGMA integrity_check; VACUUM; PRAGMA integrity_check;"
        sqlite3 db.sqlite .dump | md5sum | cut -c1-32
        rm -f db.sqlite-journal
    "#;
    let served = same_inside_and_outside(script);
    assert_served(served, 10 << 20);
}

#[test]
fn python_tempfile_shutil_zipfile_subprocess() {
    let script = r#"
python3 - <<'PY'
import json, os, shutil, subprocess, sys, tempfile, zipfile
os.environ['TMPDIR'] = os.getcwd()
tempfile.tempdir = None
with tempfile.TemporaryDirectory() as scratch:
    for i in range(20):
        with tempfile.NamedTemporaryFile('w+b', dir=scratch, delete=False, suffix=f'-{i}') as t:
            t.write(bytes([i]) * (i * 7919))
            t.seek(0); assert len(t.read()) == i * 7919
    print(len(os.listdir(scratch)))
data = {'rows': [{'i': i, 'sq': i * i, 's': str(i) * 3} for i in range(20000)]}
with open('data.json', 'w') as f: json.dump(data, f)
shutil.copy('data.json', 'copy.json')
shutil.copyfile('data.json', 'copyfile.json')
fixed = (2020, 1, 1, 0, 0, 0)  # zip entries carry dates: keep them equal on both sides
with zipfile.ZipFile('a.zip', 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr(zipfile.ZipInfo('data.json', fixed), open('data.json', 'rb').read(), zipfile.ZIP_DEFLATED)
    z.writestr(zipfile.ZipInfo('note.txt', fixed), 'hello ' * 1000, zipfile.ZIP_DEFLATED)
z = zipfile.ZipFile('a.zip'); z.extractall('unzipped'); z.close()
assert json.load(open('unzipped/data.json')) == data
os.mkdir('kids')
procs = [subprocess.Popen([sys.executable, '-c', f"open('kids/{k}', 'w').write('child {k} ' * {k + 1} * 100)"]) for k in range(8)]
assert all(p.wait() == 0 for p in procs)
print(sum(len(open(f'kids/{k}').read()) for k in range(8)))
out = subprocess.run(['cat', 'copy.json'], capture_output=True).stdout
assert out == open('data.json', 'rb').read()
with open('shared.bin', 'wb') as f:
    f.write(b'p' * 5000); f.flush()
    subprocess.run(['sh', '-c', 'printf child >> shared.bin'], check=True)
    f.seek(0, 2); f.write(b'q' * 10)
print(os.path.getsize('shared.bin'))
PY
    "#;
    let served = same_inside_and_outside(script);
    assert_served(served, 1 << 20);
}

#[test]
fn bash_fd_tricks_and_concurrent_appends() {
    let script = r#"
        exec 3<>rw.txt
        echo "first line" >&3
        printf 'abc' >&3
        exec 3>&-
        cat rw.txt
        exec 4>>appended.txt
        for i in 1 2 3; do echo "fd4 $i" >&4; done
        exec 4>&-
        for p in $(seq 1 8); do
            ( for j in $(seq 1 40); do echo "proc $p line $j" >> log.txt; done ) &
        done
        wait
        wc -l < log.txt
        sort log.txt > log.sorted
        rm log.txt
        cat appended.txt rw.txt > joined.txt
        exec 5<joined.txt
        read -r first <&5
        echo "$first"
        exec 5<&-
        # A redirect inherited by a child that then opens the same file by name:
        # writes through the inherited fd must be visible to its own reads.
        python3 -c "
import os, sys
f = open('redirected.txt', 'r+b')
os.write(1, b'line one\n')
sys.stderr.write(repr(f.read()) + '\n')
f.seek(0, 2); f.write(b'appended by name\n'); f.flush()
os.write(1, b'line two\n')
" > redirected.txt 2> seen.txt
        cat redirected.txt seen.txt
    "#;
    let served = same_inside_and_outside(script);
    assert!(served.0 + served.1 > 0, "{served:?}");
}
