#!/usr/bin/env bash
# Assembles a CPU-only libtorch 2.13.0 (what tch 0.26 needs) at the directory given, from PyPI's
# torch wheel, the only source that works here: torch/lib and torch/include, plus the two CUDA
# runtime libraries libtorch_cpu links against; the CUDA kernels are dropped and libtorch.so
# (which only pulls libtorch_cuda in) becomes an empty shared object. Needs pip, python3 and gcc
# (PIP and PYTHON choose them). Used by deploy/dev/setup.sh and the Dockerfile.
set -euo pipefail
out=${1:?usage: libtorch.sh DIR}
PIP=${PIP:-pip3}
PYTHON=${PYTHON:-python3}
version=2.13.0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PIP" download -q --disable-pip-version-check --no-deps -d "$work" \
  "torch==$version" "nvidia-cuda-runtime==13.5.37" "nvidia-cuda-cupti==13.5.25"
staging="$out.partial"
rm -rf "$staging"
mkdir -p "$staging"
"$PYTHON" - "$work" "$staging" <<'PY'
import pathlib, shutil, sys, zipfile
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(out / "lib").mkdir(parents=True, exist_ok=True)
drop = {"libtorch_cuda.so", "libtorch_cuda_linalg.so", "libc10_cuda.so", "libtorch_nvshmem.so",
        "libcaffe2_nvrtc.so", "libtorch_python.so"}
for wheel in work.glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.endswith("/"):
                continue
            if name.startswith("torch/include/"):
                target = out / name[len("torch/"):]
            elif name.startswith("torch/lib/") and pathlib.PurePath(name).name not in drop:
                target = out / "lib" / name[len("torch/lib/"):]
            elif pathlib.PurePath(name).name in ("libcudart.so.13", "libcupti.so.13"):
                target = out / "lib" / pathlib.PurePath(name).name
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
printf '' | gcc -shared -x c - -o "$staging/lib/libtorch.so"
echo "$version" >"$staging/build-version"
touch "$staging/.complete"
rm -rf "$out"
mv "$staging" "$out"
