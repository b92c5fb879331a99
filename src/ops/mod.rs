//! Operator commands built on the layers below: checks, recovery, keys, local clusters.

pub mod backup;
pub mod deploy;
pub mod deploy_gate;
pub mod dev;
pub mod doctor;
pub mod keys;
pub mod migrate;
pub mod pgcluster;
pub mod recover;
pub mod smoke;
pub mod storage_audit;
