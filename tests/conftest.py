"""Suite-wide set-up: cells run inline (in the test process) unless a test asks for Ray.

The study runner's default is a local Ray instance (issue 10); starting one per test process and
importing TensorFlow in its workers would add minutes to the suite without testing anything the
Ray tests (tests/study/test_cluster*.py) do not. Set here as an environment variable, so the
experiment scripts that tests run as subprocesses inherit it.
"""

import os

os.environ.setdefault("TFQUANT_RAY_ADDRESS", "inline")
