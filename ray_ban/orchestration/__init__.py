"""The Ray layer, and the only code that imports Ray: Train runs of chains, Tune trials, the cluster."""
