"""The command line every end-to-end test module takes (ctest passes it):

  <module>.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR [unittest args...]

main() parses it into the running module's ARGS (paths made absolute) and runs
its tests with unittest.
"""

import argparse
import os
import sys
import unittest


def main():
    module = sys.modules["__main__"]
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--gen", required=True)
    ap.add_argument("--shared", required=True)
    args, rest = ap.parse_known_args()
    args.bin = os.path.abspath(args.bin)
    args.gen = os.path.abspath(args.gen)
    module.ARGS = args
    unittest.main(module=module, argv=[sys.argv[0]] + rest, verbosity=2)
