"""Compiles ringsp's Gluon Hopper kernel for sm90 ahead of time, on any machine (no GPU):
python -m tests.kernels.hopper_aot D BLOCK_N STAGES HAS_STATE STATE_TMA prints what the kernel
holds (wgmma, TMA, register reallocation) and its shared memory as one JSON line."""
import json
import sys

from ringsp_kernels.cuda import hopper


def _compile(D, block_n, stages, has_state, state_tma, dtype="bf16"):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from ringsp_kernels.cuda.hopper_step import ring_step_kernel

    rows, gdt = 64, {"bf16": gl.bfloat16, "fp16": gl.float16}[dtype]

    def desc(dt, gdtype, block):
        return f"tensordesc<{dt}[{', '.join(map(str, block))}],{gl.NVMMASharedLayout.get_default_for(block, gdtype)!r}>"

    types = dict(q_desc=desc(dtype, gdt, [rows, D]), k_desc=desc(dtype, gdt, [1, block_n, D]),
                 v_desc=desc(dtype, gdt, [1, block_n, D]), s_desc=desc("fp32", gl.float32, [rows, D]),
                 AccIn="*fp32", Acc="*fp32" if has_state else f"*{dtype}", Lse="*fp32", qk_scale="fp32")
    consts = dict(HEAD_DIM=D, BLOCK_M=2 * rows, BLOCK_N=block_n, STAGES=stages, HAS_STATE=has_state,
                  STATE_TMA=state_tma, s_desc=None if not state_tma else ...)
    sig, constexprs = {}, {}
    for i, name in enumerate(ring_step_kernel.arg_names):
        if name in consts and consts[name] is not ...:
            sig[name], constexprs[(i,)] = "constexpr", consts[name]
        else:
            sig[name] = types.get(name, "i32")
    src = GluonASTSource(ring_step_kernel, sig, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": hopper.MAXNREG})


if __name__ == "__main__":
    D, block_n, stages, has_state, state_tma = (int(x) for x in sys.argv[1:6])
    kernel = _compile(D, block_n, stages, bool(has_state), bool(state_tma))
    ptx = kernel.asm["ptx"]
    print(json.dumps({"wgmma": "wgmma.mma_async" in ptx, "tma": "cp.async.bulk.tensor" in ptx,
                      "setmaxnreg": "setmaxnreg" in ptx, "shared": kernel.metadata.shared}))
