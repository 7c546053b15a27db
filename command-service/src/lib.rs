pub mod startup;
