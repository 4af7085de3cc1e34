"""Built-in latency profiles measured on CPUs (data only; sliceserve.core.latency.BUILTIN_PROFILES lists them).

`cpu-epyc-int8`: `sliceserve profile --output ... --max-batch 16 --contexts 128,512 --chunks 32,128,256,512
--repeats 3` on the CPU default representation (int8, sliceserve/model/quant/) of the embedded model, one torch
thread, on this project's 2-vCPU AMD EPYC VMs (docs/results/cpu-representation.md). Use it with
`sliceserve simulate --profile cpu-epyc-int8` to simulate that device; a server measures its own at start-up.
"""

CPU_EPYC_INT8 = {
    'decode_table_s': [
        0.020669, 0.022169, 0.023622, 0.023622, 0.024109, 0.024397, 0.026148, 0.028877,
        0.030358, 0.03244, 0.032696, 0.032696, 0.033504, 0.036268, 0.03829, 0.03829,
    ],
    'ctx_coef_s': 1.22078e-05,
    'prefill_base_s': 0.050311,
    'prefill_per_token_s': 0.000711379,
    'prefill_quad_s': 1.22863e-06,
    'ctx_iter_coef_s': 0.0,
    'ctx_buckets': None,
    'name': 'cpu-epyc-int8',
    'notes': ('sliceserve profile of the CPU default (int8-dynamic), embedded SmolLM2-135M-Instruct, 1 torch '
              'thread, AMD EPYC (2 shared vCPUs, load average 3.9), measured by sliceserve profile: 36 points, '
              'median of 3; fit error 4.4% (mean |relative error| on the samples)'),
}
