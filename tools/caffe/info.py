"""Print what Caffe build is installed in this environment (`make caffe-info`)."""
import json
import os
import sys

import caffe

pkg = os.path.dirname(caffe.__file__)
with open(os.path.join(pkg, 'build-info.json')) as f:
    info = json.load(f)
with open(os.path.join(pkg, '.build-cache')) as f:
    cache = f.read().strip()

print(f"Caffe source:   {info['source']}")
print(f"Variant:        {info['variant']} (key {info['key']})")
print(f"Patches:        {len(info['patches'])} applied")
for p in info['patches']:
    print(f"                - {p}")
print(f"BLAS:           {info['blas']}")
print(f"Python / numpy: {info['python']} / {info['numpy']} (running {sys.version.split()[0]})")
print("CMake options:  " + " ".join(info['cmake_options']))
print(f"Cache:          {cache}")
print(f"pycaffe:        {pkg}")
