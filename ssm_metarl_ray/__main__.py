from ssm_metarl_ray.cli import main

raise SystemExit(main())
