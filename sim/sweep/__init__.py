"""Design-space sweeps (``l1bn sweep``) on local processes or a Dask cluster."""
