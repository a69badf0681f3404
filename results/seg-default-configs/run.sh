#!/bin/bash
# Default segmentation configs, multiplicative reference: train (1 thread) and test the exported target (README.md here)
cd "$(dirname "$0")/../.."  # the repository root
OUT=results/seg-default-configs/runs
common='model.convert_cfg.op=mult model.alpha=0.0 model.convert_cfg.aug_width_mult_list=[1.0] model.convert_cfg.aug_expand_list=[1.0] custom_hooks.0.width_aug_end=0.0 custom_hooks.0.sort_interval=None train_dataloader.num_workers=0 train_dataloader.persistent_workers=False val_dataloader.num_workers=0 val_dataloader.persistent_workers=False test_dataloader.num_workers=0 test_dataloader.persistent_workers=False'
mkdir -p $OUT
for cfg in shiftaddaug_mobilenet-v2-tiny_fcn_1xb8-2000it_brain-mri-tissue-96x80 shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-1000it_nuclei-64x64 \
    shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-2000it_fmnist-scenes-64x64-os4; do
  start=$(date +%s)
  OMP_NUM_THREADS=1 .venv/bin/python tools/train_mmseg.py configs/mmseg/$cfg.py --work-dir $OUT/$cfg --cfg-options $common > $OUT/$cfg.log 2>&1
  end=$(date +%s)
  echo "$cfg train wall $((end-start)) s"; grep "mIoU:" $OUT/$cfg.log | sed 's/data_time.*//'
  last=$(ls $OUT/$cfg/iter_*_mf_target.pth | sort -V | tail -1)
  OMP_NUM_THREADS=1 .venv/bin/python tools/test_mmseg.py configs/mmseg/$cfg.py $last --work-dir $OUT/$cfg/test --cfg-options $common > $OUT/$cfg.test.log 2>&1
  echo "$cfg test:"; grep "mIoU:" $OUT/$cfg.test.log | sed 's/data_time.*//'
done
