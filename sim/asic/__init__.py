"""The ASIC flow: NanGate45 synthesis, OpenSTA timing and a library power model, run as cached
steps."""
