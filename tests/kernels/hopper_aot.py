"""Compiles a Gluon Hopper kernel of ringsp for sm90 ahead of time, on any machine (no GPU):

    python -m tests.kernels.hopper_aot library D BLOCK_N STAGES HAS_STATE
    python -m tests.kernels.hopper_aot library-int8 D BLOCK_N STAGES HAS_STATE
    python -m tests.kernels.hopper_aot library-fp8 D BLOCK_N STAGES HAS_STATE
    python -m tests.kernels.hopper_aot persistent D BLOCK_N STAGES HAS_STATE STATE_TMA

prints what the kernel holds (wgmma, TMA, register reallocation) and its shared memory as one
JSON line. (Triton compiles for a target it is given; only running needs the GPU.)"""
import json
import sys

from ringsp_kernels.cuda import hopper


def _desc(dt, gdtype, block):
    from triton.experimental.gluon import language as gl

    return f"tensordesc<{dt}[{', '.join(map(str, block))}],{gl.NVMMASharedLayout.get_default_for(block, gdtype)!r}>"


def compile_kernel(kernel, D, block_n, stages, has_state, state_tma=None, dtype="bf16", precision=None):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    gdt = {"bf16": gl.bfloat16, "fp16": gl.float16}[dtype]
    types = dict(q_desc=_desc(dtype, gdt, [64, D]), k_desc=_desc(dtype, gdt, [1, block_n, D]),
                 v_desc=_desc(dtype, gdt, [1, block_n, D]), s_desc=_desc("fp32", gl.float32, [64, D]),
                 AccIn="*fp32", LseIn="*fp32", Acc="*fp32" if has_state else f"*{dtype}", Lse="*fp32",
                 qk_scale="fp32")
    consts = dict(HEAD_DIM=D, BLOCK_M=128, BLOCK_N=block_n, STAGES=stages, HAS_STATE=has_state)
    if "Q8" in kernel.arg_names:
        consts.update(Q8=hopper.Q8_CODES[precision], POS_SCALE=True)
        if precision is None:
            consts.update(QRow=None, QShift=None, KScale=None, VScale=None, k_rows=None)
        else:  # 8-bit Q (2-D, as bf16's) and K ([B*H*k_rows, D] tiles of [BLOCK_N, D])
            dt, g8 = ("i8", gl.int8) if precision == "int8" else ("fp8e4nv", gl.float8e4nv)
            types.update(q_desc=_desc(dt, g8, [64, D]), k_desc=_desc(dt, g8, [block_n, D]), QRow="*fp32",
                         QShift="*fp32", KScale="*fp32", VScale="*fp32")
            if precision == "fp8":  # e4m3 V transposed: [B*H*D, k_rows] tiles of [D, BLOCK_N]
                types["v_desc"] = _desc(dt, g8, [D, block_n])
                consts["KScale"] = None
            else:
                consts["VScale"] = None
    if state_tma is not None:
        consts["STATE_TMA"] = state_tma
        if not state_tma:
            consts["s_desc"] = None
    sig, constexprs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in consts:
            sig[name], constexprs[(i,)] = "constexpr", consts[name]
        else:
            sig[name] = types.get(name, "i32")
    src = GluonASTSource(kernel, sig, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": hopper.MAXNREG})


def _kernel(which):
    if which.startswith("library"):
        from ringsp_kernels.cuda.hopper_step import ring_step_kernel
    else:
        from ringsp_bench.hopper_persistent import ring_step_kernel
    return ring_step_kernel


if __name__ == "__main__":
    which, *nums = sys.argv[1:]
    nums = [int(x) for x in nums]
    kernel = compile_kernel(_kernel(which), nums[0], nums[1], nums[2], bool(nums[3]),
                            bool(nums[4]) if len(nums) > 4 else None,
                            precision={"library-int8": "int8", "library-fp8": "fp8"}.get(which))
    ptx = kernel.asm["ptx"]
    print(json.dumps({"wgmma": "wgmma.mma_async" in ptx, "tma": "cp.async.bulk.tensor" in ptx,
                      "int8_wgmma": ".s32.s8.s8" in ptx, "bf16_wgmma": ".f32.bf16.bf16" in ptx,
                      "fp8_wgmma": ".f32.e4m3.e4m3" in ptx,
                      "setmaxnreg": "setmaxnreg" in ptx, "shared": kernel.metadata.shared}))
