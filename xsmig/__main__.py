import sys

if sys.argv[1:2] == ["agent"]:
    # Not a cli subcommand: the long-lived bookkeeping loop (xsmig/agent.py).
    from xsmig.agent import serve

    sys.exit(serve(sys.stdin, sys.stdout))

from xsmig.cli import main

sys.exit(main())
