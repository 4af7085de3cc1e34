"""Built-in latency profiles measured on CPUs (data only; sliceserve.core.latency.BUILTIN_PROFILES lists them).

`cpu-epyc-int8`: `sliceserve profile --output ... --max-batch 16 --contexts 128,512 --chunks 32,128,256,512
--repeats 3` on the CPU default representation (int8, sliceserve/model/quant/) of the embedded model, one torch
thread, on this project's 2-vCPU AMD EPYC VMs (docs/results/cpu-representation.md). Use it with
`sliceserve simulate --profile cpu-epyc-int8` to simulate that device; a server measures its own at start-up.
"""

CPU_EPYC_INT8 = {
    'decode_table_s': [
        0.0134561, 0.0142505, 0.0154726, 0.01667, 0.0183362, 0.0198757, 0.0206006, 0.0217336,
        0.0268712, 0.0268712, 0.0288668, 0.0293597, 0.029887, 0.0322144, 0.0341559, 0.0399387,
    ],
    'ctx_coef_s': 9.13089e-06,
    'prefill_base_s': 0.0298009,
    'prefill_per_token_s': 0.000685747,
    'prefill_quad_s': 1.22403e-06,
    'ctx_iter_coef_s': 1.04591e-06,
    'ctx_buckets': None,
    'name': 'cpu-epyc-int8',
    'notes': ('sliceserve profile of the CPU default (int8-dynamic, with the scripted decode step of issue 17), '
              'embedded SmolLM2-135M-Instruct, 1 torch thread, AMD EPYC (2 shared vCPUs, load average 0.5), '
              'measured by sliceserve profile: 36 points, median of 3; fit error 1.8% (mean |relative error| on '
              'the samples)'),
}
