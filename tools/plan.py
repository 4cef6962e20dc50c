"""Scaling report: the real 8B train step AOT-compiled for a simulated mesh of N devices.

  python tools/plan.py --devices 64 [--config configs/stage2_si.py --seq_len 8192 --crops 10
                        --micro_batches 4 --mesh data=1,fsdp=64,tensor=1 --attention xla --loss_chunk 0]
  python tools/plan.py --devices 8 --config configs/qlora.py     # LoRA / QLoRA on one 8-chip host

N CPU devices stand in for accelerators (XLA_FLAGS=--xla_force_host_platform_device_count=N): the
step is lowered on abstract inputs (nothing is allocated) and compiled with XLA's SPMD partitioner,
then the per-device bytes are read off the shardings (params, optimiser state) and the compiled
program (temporaries: activations, gradients, workspace). FLOPs are the analytic count of
lladav_jax.train.metrics (XLA's cost analysis counts one iteration of each loop, so it cannot count a
scanned step). The CPU compiler's buffer assignment stands in for the accelerator's; treat the
temporaries as an estimate. The fused kernels ("splash", "cudnn") cannot be compiled for CPU:
"blockwise" is the score-free attention measured here.
"""

import argparse
import os
import sys
import time


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--devices", type=int, required=True)
  parser.add_argument("--config", default="configs/stage2_si.py")
  parser.add_argument("--seq_len", type=int, default=None, help="tokens per row (default: model.max_length)")
  parser.add_argument("--crops", type=int, default=10, help="crop slots per row (vision tower input)")
  parser.add_argument("--micro_batches", type=int, default=0, help="0: one row per device per micro-batch")
  parser.add_argument("--mesh", default="", help="e.g. data=2,fsdp=32,tensor=1 (default: all fsdp)")
  parser.add_argument("--remat", default="", help="override compute.remat_policy")
  parser.add_argument("--attention", default="", help="override compute.attention_impl")
  parser.add_argument("--loss_chunk", type=int, default=None, help="override compute.loss_chunk (0: full logits)")
  return parser.parse_args()


def main():
  args = parse_args()
  if args.attention in ("splash", "cudnn"):
    sys.exit(f"plan.py: --attention {args.attention} is a TPU/GPU kernel and cannot be compiled for the CPU "
             f"devices that stand in here; 'blockwise' keeps no scores either")
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

  import flax.linen as nn
  import jax
  import numpy as np

  from flax import traverse_util

  from lladav_jax import cli, run_config
  from lladav_jax.models.lora import is_adapter
  from lladav_jax.train import loop, metrics
  from lladav_jax.train.state import with_shardings

  cli.set_platform_flags()
  config = run_config.load_config_file(args.config)
  if args.mesh:
    config.mesh.update(cli.parse_mesh(args.mesh))
  else:
    config.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  if args.remat:
    config.compute.remat_policy = args.remat
  if args.attention:
    config.compute.attention_impl = args.attention
  if args.loss_chunk is not None:
    config.compute.loss_chunk = args.loss_chunk
  if args.seq_len is None:
    args.seq_len = config.model.max_length
  batch = config.train.global_batch_size
  config.train.micro_batches = args.micro_batches or max(1, batch // args.devices)
  model_config = run_config.model_config(config)

  start = time.perf_counter()
  setup = loop.setup(config, total_steps=1000)
  shardings = setup.state_shardings

  gib = 2 ** 30

  def per_device_bytes(tree, tree_shardings):
    total = 0
    for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(tree_shardings)):
      total += int(np.prod(sharding.shard_shape(leaf.shape))) * leaf.dtype.itemsize
    return total

  abstract = setup.abstract_state
  params_bytes = per_device_bytes(abstract.params, shardings.params)
  flat_params = traverse_util.flatten_dict(abstract.params)
  flat_shardings = traverse_util.flatten_dict(shardings.params)
  adapter_paths = [p for p in flat_params if is_adapter(p)]
  adapter_bytes = per_device_bytes([flat_params[p] for p in adapter_paths], [flat_shardings[p] for p in adapter_paths])
  opt_bytes = per_device_bytes(abstract.opt_state, shardings.opt_state)
  spec = loop.batch_spec(config, model_config, args.seq_len, args.crops)
  batch_in = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=setup.batch_shardings[k]) for k, v in spec.items()}
  state_in = with_shardings(abstract, shardings)
  with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
    lowered = setup.train_step.jitted.lower(state_in, batch_in)
  compiled = lowered.compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  analytic = metrics.step_flops(model_config, batch, args.seq_len, args.crops, config.optim.trainable)
  batch_bytes = per_device_bytes(list(spec.values()), [setup.batch_shardings[k] for k in spec])

  mesh = dict(setup.mesh.shape)
  print(f"config {args.config}: {sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params)) / 1e9:.2f}B "
        f"params ({config.compute.param_dtype} master, {config.compute.dtype} compute, remat "
        f"{config.compute.remat_policy}, attention {config.compute.attention_impl}, loss chunk "
        f"{config.compute.loss_chunk}), trainable {tuple(config.optim.trainable)}")
  print(f"mesh {mesh} on {args.devices} simulated devices; global batch {batch} x {args.seq_len} tokens, "
        f"{args.crops} crops per row, {config.train.micro_batches} micro-batches "
        f"({batch // config.train.micro_batches // max(1, args.devices // mesh['tensor'])} rows per device each)")
  print(f"compile: {seconds:.0f} s")
  if adapter_paths:
    lora = setup.model.compute.lora
    print(f"LoRA rank {lora.rank} on {len(adapter_paths) // 2} layer groups, base {lora.base_quantization} "
          f"(block {lora.quantization_block}): "
          f"{sum(int(np.prod(flat_params[p].shape)) for p in adapter_paths) / 1e6:.1f}M adapter params, "
          f"{adapter_bytes / gib:.3f} GiB of the params per device; base {(params_bytes - adapter_bytes) / gib:.2f} GiB")
  print(f"per device: params {params_bytes / gib:.2f} GiB, optimiser state {opt_bytes / gib:.2f} GiB, "
        f"batch {batch_bytes / gib:.2f} GiB, temporaries (activations, gradients, workspace) "
        f"{memory.temp_size_in_bytes / gib:.2f} GiB")
  print(f"per device total: {(params_bytes + opt_bytes + batch_bytes + memory.temp_size_in_bytes) / gib:.2f} GiB "
        f"(compiled: arguments {memory.argument_size_in_bytes / gib:.2f} GiB, outputs "
        f"{memory.output_size_in_bytes / gib:.2f} GiB, aliased {memory.alias_size_in_bytes / gib:.2f} GiB)")
  print(f"FLOPs per step: {analytic:.3e} (model FLOPs: forward + backward, full bidirectional attention, "
        f"remat recomputation not counted), {analytic / args.devices:.3e} per device")


if __name__ == "__main__":
  main()
