import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
# STREK_TEST_THREADS=1 keeps the suite on one core when other work shares the machine.
torch.set_num_threads(int(os.environ.get("STREK_TEST_THREADS", "2")))
