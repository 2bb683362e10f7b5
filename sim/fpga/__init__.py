"""The FPGA flow: ECP5 synthesis, place and route (Fmax), generic-gate synthesis and gate-level
energy, run as cached steps."""
