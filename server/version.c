/* placeholder so tm_server has a source */
