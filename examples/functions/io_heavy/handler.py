"""An I/O-heavy function: writes files to /tmp, then re-reads them at random.

Unchanged OpenWhisk style (`main(args)`); temporary files go where the
platform's TMPDIR points, which Ephemera serves from memory.

Input (all optional):
  files     number of files (default 4)
  size_kib  size of each file in KiB (default 512)
  block     I/O block size in bytes (default 8192)
  reads     random block re-reads per file (default 64)
  seed      content seed (default 1)

File i, block k holds sha256(f"{seed}/{i}/{k}") repeated to the block size,
so a caller can recompute `sha256` without running Python.
"""
import hashlib
import os
import random
import tempfile


def block_bytes(seed, i, k, block):
    unit = hashlib.sha256(f"{seed}/{i}/{k}".encode()).digest()
    return (unit * (block // len(unit) + 1))[:block]


def main(args):
    files = int(args.get("files", 4))
    size = int(args.get("size_kib", 512)) * 1024
    block = int(args.get("block", 8192))
    reads = int(args.get("reads", 64))
    seed = int(args.get("seed", 1))
    if block <= 0 or size % block:
        return {"error": f"size_kib*1024 ({size}) must be a multiple of block ({block})"}
    tmp = tempfile.gettempdir()
    blocks = size // block
    digest = hashlib.sha256()
    written = read = 0
    rnd = random.Random(seed)
    for i in range(files):
        path = os.path.join(tmp, f"io-heavy-{i}.bin")
        with open(path, "wb") as f:
            for k in range(blocks):
                data = block_bytes(seed, i, k, block)
                f.write(data)
                written += len(data)
        with open(path, "rb") as f:
            for k in range(blocks):
                data = f.read(block)
                read += len(data)
                digest.update(data)
            for _ in range(reads):
                k = rnd.randrange(blocks)
                f.seek(k * block)
                data = f.read(block)
                read += len(data)
                if data != block_bytes(seed, i, k, block):
                    return {"error": f"file {i} block {k} read back wrong bytes"}
        if os.path.getsize(path) != size:
            return {"error": f"file {i} has size {os.path.getsize(path)}, wrote {size}"}
        os.unlink(path)
    return {
        "files": files,
        "bytes_written": written,
        "bytes_read": read,
        "sha256": digest.hexdigest(),
        "tmpdir": tmp,
    }
