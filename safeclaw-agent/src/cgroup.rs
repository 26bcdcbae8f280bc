//! cgroup v2: finding the mount, creating the agent cgroup, and naming cgroups by id.
