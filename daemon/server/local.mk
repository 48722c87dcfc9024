# daemon/server
