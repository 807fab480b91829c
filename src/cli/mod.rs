pub fn placeholder_removed_later() {}
