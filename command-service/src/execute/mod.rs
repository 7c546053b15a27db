//! Rule execution (`POST /rules/execute`): plan with [`planner`], write with [`apply`],
//! drive chunks with [`runner`], preview with [`preview`], keep plans in [`plans`].

pub mod apply;
pub mod planner;
pub mod plans;
pub mod preview;
pub mod request;
pub mod runner;
pub mod world;
