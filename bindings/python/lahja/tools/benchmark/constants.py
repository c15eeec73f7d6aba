# Names of the fixed endpoints taking part in the benchmark.
ROOT_ENDPOINT = "root"
REPORTER_ENDPOINT = "reporter"
DRIVER_ENDPOINT = "driver"
