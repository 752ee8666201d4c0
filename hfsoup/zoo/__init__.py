"""The zoo: config, folder layout, Accelerate training of the trunk, branches and SWA, build, publish and pull."""
