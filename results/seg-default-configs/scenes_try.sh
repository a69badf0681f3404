#!/bin/bash
# Scenes schedule search (README.md here): a multiplicative run of the 400-iteration scenes config with overrides
# usage: scenes_try.sh NAME ITERS [extra cfg-options...]
cd "$(dirname "$0")/../.."  # the repository root
mkdir -p results/seg-default-configs/runs
name=$1; iters=$2; shift 2
OMP_NUM_THREADS=1 .venv/bin/python tools/train_mmseg.py configs/mmseg/shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py --work-dir results/seg-default-configs/runs/$name --cfg-options model.convert_cfg.op=mult model.alpha=0.0 "model.convert_cfg.aug_width_mult_list=[1.0]" "model.convert_cfg.aug_expand_list=[1.0]" custom_hooks.0.width_aug_end=0.0 custom_hooks.0.sort_interval=None train_cfg.max_iters=$iters train_cfg.val_interval=$((iters/2)) param_scheduler.1.end=$iters default_hooks.checkpoint.interval=$iters default_hooks.logger.interval=200 train_dataloader.num_workers=0 train_dataloader.persistent_workers=False val_dataloader.num_workers=0 val_dataloader.persistent_workers=False test_dataloader.num_workers=0 test_dataloader.persistent_workers=False "$@" > results/seg-default-configs/runs/$name.log 2>&1
grep -E "mIoU:" results/seg-default-configs/runs/$name.log | sed 's/data_time.*//' | sed "s/^/$name /"
