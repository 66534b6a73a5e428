"""``python -m streamrec`` is the ``streamrec`` command."""

from __future__ import annotations

from streamrec.cli import main

if __name__ == "__main__":
    main()
