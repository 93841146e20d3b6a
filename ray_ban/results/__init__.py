"""What a sweep leaves, read from files: tables, cells and comparisons, TensorBoard runs, report."""
