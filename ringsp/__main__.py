"""`python -m ringsp generate ...` is `ringsp generate ...`."""
import sys

from ringsp.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
