from rawfin.cli import main

raise SystemExit(main())
