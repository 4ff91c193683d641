from rsitr_bench.cli import main

raise SystemExit(main())
