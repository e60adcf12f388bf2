"""Precision graphs: FP16 and INT8 ONNX models with the precision baked in (what TensorRT 11 builds from),
calibration on real images, and the accuracy each precision costs."""
