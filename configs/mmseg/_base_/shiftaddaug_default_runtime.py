# mmseg's default runtime + the ShiftAddAug plugin and schedule hook (docs/ARCHITECTURE.md MMSegmentation/mmengine).
_base_ = ['mmseg::_base_/default_runtime.py', './shiftaddaug_plugin.py']
