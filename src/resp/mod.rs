//! RESP on the data path: the resumable scanner, request arguments and inline
//! commands, and the replies the proxy builds itself.

pub mod frames;
pub mod reply;
pub mod request;
pub mod scan;

pub use scan::{Direction, FrameInfo, Limits, Progress, ProtocolError, Scanner};
