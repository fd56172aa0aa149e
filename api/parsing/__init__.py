"""Reading requests: parameters from the query string or a JSON body, held to the OpenAPI schema; uploaded images."""
