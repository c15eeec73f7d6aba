"""
What a call from Python into liblahja costs through the package's C
extension (the CPython API, lahja._core) and through cffi (ABI mode, the
other way a binding could have been made), measured on the same library
in one run: ns per call of lahja_strerror (a C call that returns a string,
which each way turns into a Python str), and of a call that returns a
number (lahja_version through cffi; the extension's nearest is Op-free
is_connected_to on an endpoint, a method call with one argument).

    PYTHONPATH=build/python /usr/bin/python3 bench/python_binding.py build

Needs python3-cffi (Debian); prints a line per measurement and the ratio.
"""
import sys
import time


def per_call(fn, n=1_000_000, reps=5):
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e9


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    from lahja import _core

    try:
        import cffi
    except ImportError:
        print("python3-cffi is not installed: only the extension is measured")
        cffi = None
    ext_str = per_call(lambda: _core.strerror(-11))
    ep = _core.Endpoint("bench")
    ep.start(None)
    ext_num = per_call(lambda: ep.is_connected_to("nobody"))
    print(f"extension  strerror -> str       {ext_str:7.1f} ns/call")
    print(f"extension  is_connected_to -> bool {ext_num:5.1f} ns/call")
    if cffi is not None:
        ffi = cffi.FFI()
        ffi.cdef("const char *lahja_strerror(int code); unsigned lahja_version(void);")
        lib = ffi.dlopen(f"{build}/liblahja.so")
        cffi_str = per_call(lambda: ffi.string(lib.lahja_strerror(-11)).decode())
        cffi_num = per_call(lambda: lib.lahja_version())
        print(f"cffi (ABI) strerror -> str       {cffi_str:7.1f} ns/call")
        print(f"cffi (ABI) version -> int        {cffi_num:7.1f} ns/call")
        print(f"cffi / extension: strings {cffi_str / ext_str:.2f}x, "
              f"numbers {cffi_num / ext_num:.2f}x")
    ep.stop(lambda status: None)
    loop = _core.loop()
    while ep.is_running:
        loop.run()


if __name__ == "__main__":
    main()
