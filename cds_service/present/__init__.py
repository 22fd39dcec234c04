"""Decision -> what people see: cards' SMART links and the SMART app's pages and charts."""
