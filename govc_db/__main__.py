"""``python -m govc_db``: the ``govc-db`` command line."""

from govc_db.cli import main

if __name__ == "__main__":
    main()
