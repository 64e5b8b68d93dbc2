"""``python -m analysis``: run the analysis command line (see ``analysis.cli``)."""

import os
import sys

# Rating fits call BLAS on tiny vectors, where a multi-threaded OpenBLAS is much slower than one
# thread; set this before numpy/scipy load (the user's own setting wins).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from analysis.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
