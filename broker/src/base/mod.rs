//! The foundation every other layer may use and which uses none of them: Kafka error codes
//! (`errors`), the process's clocks (`clock`), kernel randomness (`random`) and the durable
//! replacement of a small file (`durable`), and every fixed limit (`limits`). Nothing here knows about shards, partitions or the
//! network.

pub mod clock;
pub mod durable;
pub mod errors;
pub mod ids;
pub mod limits;
pub mod random;
