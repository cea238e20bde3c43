import os, random, tempfile, time

BLOCK = 8192

def io_task(args):
    """A file of size_mib MiB in the tier directory: written once, then `ops`
    random 8 KiB lseek+write, then `ops` random 8 KiB lseek+read."""
    if "hold" in args:
        # Busy without using CPU or memory until the bench drops the flag.
        flag = os.path.join(tempfile.gettempdir(), args["hold"])
        deadline = time.time() + 3600
        while not os.path.exists(flag) and time.time() < deadline:
            time.sleep(0.005)
        os.unlink(flag)
        return {"held": True}
    size = int(args.get("size_mib", 128)) << 20
    ops = int(args.get("ops", 500000))
    path = os.path.join(tempfile.gettempdir(), "io_task.dat")
    blocks = max(1, size // BLOCK)
    buf = bytes(range(256)) * (BLOCK // 256)
    rnd = random.Random(int(args.get("seed", 1)))
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(blocks):
            os.write(fd, buf)
        t1 = time.perf_counter()
        lseek, write, read, pick = os.lseek, os.write, os.read, rnd.randrange
        for _ in range(ops):
            lseek(fd, pick(blocks) * BLOCK, 0)
            write(fd, buf)
        t2 = time.perf_counter()
        got = 0
        for _ in range(ops):
            lseek(fd, pick(blocks) * BLOCK, 0)
            got += len(read(fd, BLOCK))
        t3 = time.perf_counter()
    finally:
        os.close(fd)
        os.unlink(path)
    return {"ops": ops, "bytes_read": got, "secs": time.perf_counter() - t0,
            "phases": [t1 - t0, t2 - t1, t3 - t2]}

def cpu_task(args):
    """Big-integer factorial of n by repeated multiplication, `rounds` times."""
    n = int(args.get("n", 5000))
    rounds = int(args.get("rounds", 1))
    t0 = time.perf_counter()
    r = 1
    for _ in range(rounds):
        r = 1
        for i in range(2, n + 1):
            r *= i
    return {"n": n, "rounds": rounds, "bits": r.bit_length(), "secs": time.perf_counter() - t0}
