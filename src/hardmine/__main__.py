from hardmine.cli import main

raise SystemExit(main())
