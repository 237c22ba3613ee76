"""INT8 calibrator interfaces, subclassable as in TensorRT. They are stored on IBuilderConfig.int8_calibrator for
the quantization work; no builder calls them yet (INT8 builds are refused until then)."""
import enum


class CalibrationAlgoType(enum.IntEnum):
    LEGACY_CALIBRATION = 0
    ENTROPY_CALIBRATION = 1
    ENTROPY_CALIBRATION_2 = 2
    MINMAX_CALIBRATION = 3


class IInt8Calibrator:
    """Base of the calibrators. A subclass implements get_batch_size(), get_batch(names) (one host or device address
    per named input, or None when the data is exhausted), read_calibration_cache() (bytes or None) and
    write_calibration_cache(cache)."""
    _algorithm = None

    def __init__(self):
        pass

    def get_algorithm(self):
        return self._algorithm

    def get_batch_size(self):
        raise NotImplementedError(f"{type(self).__name__} must implement get_batch_size()")

    def get_batch(self, names):
        raise NotImplementedError(f"{type(self).__name__} must implement get_batch(names)")

    def read_calibration_cache(self):
        return None

    def write_calibration_cache(self, cache):
        return None


class IInt8LegacyCalibrator(IInt8Calibrator):
    _algorithm = CalibrationAlgoType.LEGACY_CALIBRATION

    def get_quantile(self):
        raise NotImplementedError(f"{type(self).__name__} must implement get_quantile()")

    def get_regression_cutoff(self):
        raise NotImplementedError(f"{type(self).__name__} must implement get_regression_cutoff()")

    def read_histogram_cache(self, length):
        return None

    def write_histogram_cache(self, data, length):
        return None


class IInt8EntropyCalibrator(IInt8Calibrator):
    _algorithm = CalibrationAlgoType.ENTROPY_CALIBRATION


class IInt8EntropyCalibrator2(IInt8Calibrator):
    _algorithm = CalibrationAlgoType.ENTROPY_CALIBRATION_2


class IInt8MinMaxCalibrator(IInt8Calibrator):
    _algorithm = CalibrationAlgoType.MINMAX_CALIBRATION
