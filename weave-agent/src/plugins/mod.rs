//! The orchestrators' ways in: the CNI plugin a runtime runs (`cni`), and the Docker network
//! and IPAM driver the agent serves (`docker`). Each has the agent do the work as for
//! `attach` (`control::cni`, `control::docker_driver`).

pub mod cni;
pub mod docker;
