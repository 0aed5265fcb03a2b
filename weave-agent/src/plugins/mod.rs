//! The orchestrators' ways in: the CNI plugin a runtime runs (`cni`). Each asks the local
//! agent over its socket, and the agent does the work as for `attach` (`control::cni`).

pub mod cni;
