"""Everything Ray, in layers: `cli`, `spark`, `orchestration`, `scheduling`, `observability`;
`runtime` connects a process to Ray, and `_ray_compat` holds every use of Ray's internals."""
