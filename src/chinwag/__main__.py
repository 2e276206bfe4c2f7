from chinwag.cli import main

raise SystemExit(main())
