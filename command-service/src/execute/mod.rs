//! Rule execution (`POST /rules/execute`): plan with [`planner`], write with [`apply`],
//! drive chunks with [`runner`] (planning the
//! next chunk while one is written: [`ahead`]), preview with [`preview`], keep plans in [`plans`].

pub mod ahead;
pub mod apply;
pub mod overlay;
pub mod planner;
pub mod plans;
pub mod preview;
pub mod request;
pub mod runner;
pub mod world;
