"""Training under DomainBed's protocol: config, protocol, loop, along-run baselines, evaluation, selection."""
