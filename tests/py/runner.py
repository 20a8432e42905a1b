"""The check runner the scripts here share: each check runs under a time limit and
prints `PASS name: detail` or `FAIL name: error` (with its traceback on stderr), then
a `label: N passed, M failed` line; the result is the exit status, 0 only if all
passed. tests/common/python.rs reads these lines."""

import asyncio
import sys
import traceback


async def run(label, checks, call, timeout):
    """Runs `await call(check)` for each `(name, check)` of `checks`."""
    passed = failed = 0
    for name, check in checks:
        try:
            async with asyncio.timeout(timeout):
                detail = await call(check)
        except BaseException as e:  # noqa: B036  (a timeout is a failure too)
            if isinstance(e, KeyboardInterrupt):
                raise
            failed += 1
            err = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            print(f"FAIL {name}: {err}", flush=True)
            traceback.print_exc(file=sys.stderr)
        else:
            passed += 1
            print(f"PASS {name}: {detail}", flush=True)
    print(f"{label}: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1
