"""The MES server: GraphQL API, data, rules and jobs. See README.md for the layout."""
