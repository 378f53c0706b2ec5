"""Bridge to an external ASTRA-Sim build: Chakra traces, inputs, and the subprocess driver."""
