"""Training under DomainBed's protocol: config, loop, evaluation, selection, run folders."""
