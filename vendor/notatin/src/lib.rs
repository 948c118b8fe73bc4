/*
 * Copyright 2023 Aon Cyber Solutions
 *
 * Licensed under the Apache License, Version 2.0 (the "License");
 * you may not use this file except in compliance with the License.
 * You may obtain a copy of the License at
 *
 *     http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS,
 * WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 * See the License for the specific language governing permissions and
 * limitations under the License.
 */

// imgcheck: lints newer than the crate (vendor/notatin/PATCHES.md, "Lints"), kept off so the
// vendored code stays as published.
#![allow(deprecated, dead_code, mismatched_lifetime_syntaxes)]
#![allow(clippy::all)]

pub mod field_offset_len;
pub(crate) mod macros;

pub mod base_block;
pub mod cell;
pub mod cell_big_data;
pub mod cell_key_node;
pub mod cell_key_security;
pub mod cell_key_value;
pub mod cell_value;
pub mod cli_util;
pub mod err;
pub mod field_serializers;
pub mod file_info;
pub mod filter;
pub mod hive_bin_cell;
pub mod hive_bin_header;
pub mod log;
pub mod marvin32;
pub mod parser;
pub mod parser_builder;
pub mod parser_recover_deleted;
pub mod progress;
pub mod reg_item_map;
pub mod state;
pub mod sub_key_list_lf;
pub mod sub_key_list_lh;
pub mod sub_key_list_li;
pub mod sub_key_list_ri;
pub mod transaction_log;
pub mod util;
